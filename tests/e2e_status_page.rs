//! End-to-end: the status page (issues 7 and 24) in a real headless
//! Chromium against real nginx with 4 workers: the HTML the server sends
//! lists every upstream and server with their figures (read over HTTP and
//! in Chromium with JavaScript off), names escaped, the same text as the
//! script renders; every server listed, a drain through the API reaching
//! the page, the page's Undrain button and weight form reaching the API,
//! no controls when read only, a phone-width window without horizontal
//! scroll, sessions (the Bound column and the learn zone's line) where an
//! upstream has them, and (with `HAB_SCREENSHOT=1`) a screenshot under
//! load written to `docs/status.png`.

use std::fs;
use std::time::Duration;

use hab_testkit::backend::process::Backend;
use hab_testkit::browser::{self, Browser};
use hab_testkit::http::{self, get};
use hab_testkit::load::{spawn_load, LoadOpts};
use hab_testkit::nginx::{nginx_or_skip, proxy_block, root, serial, server_lines, Nginx, WORKERS};
use hab_testkit::port::{free_port, refused_addr};
use hab_testkit::proc::wait_until;
use hab_testkit::skip::say;
use serde_json::Value;

/// How long a change may take to show: the page polls every second.
const SHOW: Duration = Duration::from_secs(2);
/// How long the first render may take (browser start, first poll).
const FIRST: Duration = Duration::from_secs(10);

fn ready() -> bool {
    nginx_or_skip() && browser::browser_or_skip()
}

/// Upstream `up` (3 servers) proxied at `/`, the API at `/api/` with
/// `api_args` (`" write=on"` or `""`).
fn start(backends: &[Backend], api_args: &str) -> Nginx {
    let upstream = format!(
        "        ha_balance round_robin;\n{}",
        server_lines(backends, &["weight=3", "", ""])
    );
    start_upstream(free_port(), &upstream, api_args)
}

/// nginx on `port` proxying `/` to upstream `up` (`upstream_body`), the
/// API at `/api/` with `api_args`.
fn start_upstream(port: u16, upstream_body: &str, api_args: &str) -> Nginx {
    let block = proxy_block(port, upstream_body, "").replacen(
        "        location / {",
        &format!("        location /api/ {{ ha_api{api_args}; }}\n        location / {{"),
        1,
    );
    Nginx::start(&block, WORKERS)
}

/// Checks that the server answers the page (not JSON) at `path`.
fn assert_serves_page(port: u16, path: &str) {
    let r = http::get_with(port, path, &[("Accept", "text/html")])
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        r.status == 200 && ct.starts_with("text/html") && !r.text().contains("__HAB_WRITE__"),
        "GET {path} (Accept: text/html) should be the status page: HTTP {} {ct:?}: {:.200}",
        r.status,
        r.text()
    );
}

/// Opens the page in a `size` window and waits until it shows a row for
/// every server id.
fn open_sized(port: u16, path: &str, size: (u32, u32)) -> Browser {
    let b = Browser::start_sized(size.0, size.1).expect("start headless chromium");
    b.goto(&format!("http://127.0.0.1:{port}{path}"))
        .expect("open status page");
    b.wait_js(
        "document.querySelectorAll('tr[data-upstream=\"up\"]').length === 3 \
         && document.getElementById('updated').dataset.polled === '1'",
        FIRST,
    )
    .unwrap_or_else(|e| panic!("page never listed 3 servers: {e}"));
    b
}

fn open(port: u16, path: &str) -> Browser {
    open_sized(port, path, browser::WINDOW)
}

fn ids(b: &Browser) -> Vec<String> {
    b.find_all("tr[data-upstream=\"up\"]")
        .unwrap()
        .iter()
        .map(|e| b.attr(e, "data-id").unwrap().unwrap_or_default())
        .collect()
}

fn row_state(b: &Browser, id: usize) -> Option<String> {
    let row = b
        .find(&format!("tr[data-upstream=\"up\"][data-id=\"{id}\"]"))
        .unwrap()?;
    b.attr(&row, "data-state").unwrap()
}

fn api_server(port: u16, id: usize) -> Value {
    let path = format!("/api/upstreams/up/servers/{id}");
    let r = http::get(port, &path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.text()))
}

#[test]
fn status_page_follows_drain_and_undrains() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("p", 3);
    let ngx = start(&backends, " write=on");
    let port = ngx.port();
    assert_serves_page(port, "/api/");
    assert_serves_page(port, "/api/status.html");

    let b = open(port, "/api/");
    assert_eq!(ids(&b), ["0", "1", "2"]);
    // No sessions here: no Bound column, no sessions line.
    assert!(b.find("th.c-bound").unwrap().is_none());
    assert!(b.find("section .sessions:not([hidden])").unwrap().is_none());
    let state_text = b
        .find("tr[data-id=\"0\"] td.state")
        .unwrap()
        .expect("state cell");
    assert_eq!(b.text(&state_text).unwrap(), "up");
    let address = b
        .find("tr[data-id=\"2\"] td:nth-child(2)")
        .unwrap()
        .unwrap();
    assert!(b.text(&address).unwrap().contains(&backends[2].addr()));

    let r = http::request(
        port,
        "PATCH",
        "/api/upstreams/up/servers/1",
        br#"{"drain":true}"#,
    )
    .expect("PATCH drain");
    assert_eq!(r.status, 200, "PATCH drain: {}", r.text());
    let shown = b.wait("row 1 draining", SHOW, |b| {
        Ok(row_state(b, 1).filter(|s| s == "draining"))
    });
    assert!(
        shown.is_ok(),
        "row 1 should show draining within {SHOW:?}, shows {:?}",
        row_state(&b, 1)
    );
    // The drain set its `state_since`: the script shows the time in the
    // state (counting up); row 0, never changed, a dash.
    let since = |b: &Browser, id: usize| {
        let e = b
            .find(&format!(
                "tr[data-upstream=\"up\"][data-id=\"{id}\"] td.since"
            ))
            .unwrap()
            .expect("time in state cell");
        b.text(&e).unwrap()
    };
    assert!(api_server(port, 1)["state_since"].is_string());
    let s1 = since(&b, 1);
    assert!(
        s1.ends_with(" ms") || s1.ends_with(" s"),
        "row 1 time in state {s1:?}"
    );
    assert_eq!(since(&b, 0), "\u{2013}");
    b.wait(
        "row 1 in its state for a second",
        Duration::from_secs(4),
        |b| Ok(since(b, 1).ends_with(" s").then_some(())),
    )
    .expect("the time in state counts up");

    let undrain = b
        .find("tr[data-upstream=\"up\"][data-id=\"1\"] button[data-action=\"undrain\"]")
        .unwrap()
        .expect("Undrain button of row 1");
    b.click(&undrain).expect("click Undrain");
    let undrained = wait_until(SHOW, || api_server(port, 1)["drain"] == false);
    let err = b.find("#error-text").unwrap().map(|e| b.text(&e).unwrap());
    assert!(
        undrained,
        "Undrain should reach the API within {SHOW:?}: {}; page error: {err:?}",
        api_server(port, 1)
    );
    b.wait("row 1 up again", SHOW, |b| {
        Ok(row_state(b, 1).filter(|s| s == "up"))
    })
    .expect("row 1 back to up");
}

#[test]
fn status_page_read_only_has_no_buttons() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("q", 3);
    let ngx = start(&backends, "");
    assert_serves_page(ngx.port(), "/api/");
    let b = open(ngx.port(), "/api/status.html");
    assert_eq!(ids(&b), ["0", "1", "2"]);
    let buttons = b.find_all("button[data-action]").unwrap();
    assert!(
        buttons.is_empty(),
        "read-only page has {} action buttons",
        buttons.len()
    );
    let forms = b.find_all("form, input").unwrap();
    assert!(
        forms.is_empty(),
        "read-only page has {} forms or inputs",
        forms.len()
    );
    let weight = b
        .find("tr[data-upstream=\"up\"][data-id=\"0\"] td.weight")
        .unwrap()
        .expect("weight cell");
    assert_eq!(b.text(&weight).unwrap(), "3", "the weight, as text");
}

#[test]
fn status_page_under_load_screenshot() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("s", 3);
    let ngx = start(&backends, " write=on");
    let port = ngx.port();
    let opts = LoadOpts {
        threads: 2,
        per_thread: 100_000,
        pause: Duration::from_millis(5),
        max_time: Duration::from_secs(60),
    };
    // Server 1 slow, some 5xx everywhere, server 2 drained: every column
    // has something to show.
    backends[1].set_mode("delay:30");
    let ok = spawn_load(port, "/", opts);
    let failing = spawn_load(
        port,
        "/?status=500",
        LoadOpts {
            threads: 1,
            pause: Duration::from_millis(50),
            ..opts
        },
    );
    let r = http::request(
        port,
        "PATCH",
        "/api/upstreams/up/servers/2",
        br#"{"drain":true}"#,
    )
    .expect("PATCH drain");
    assert_eq!(r.status, 200, "PATCH drain: {}", r.text());

    let shot = std::env::var("HAB_SCREENSHOT").is_ok_and(|v| v == "1");
    let b = open_sized(port, "/api/", (1600, 560));
    // Every figure column shows live statistics.
    for (what, expr) in [
        (
            "request rates of rows 0 and 1",
            "[0, 1].every(i => parseFloat(cell(i, 'rps')) > 0)",
        ),
        ("no rate on drained row 2", "cell(2, 'rps') === '0.0'"),
        (
            "a 5xx rate on row 0",
            "/^[0-9.]+%$/.test(cell(0, 'err')) && parseFloat(cell(0, 'err')) > 0",
        ),
        ("row 1 slower than 25 ms", "parseFloat(cell(1, 'rt')) >= 25"),
        (
            "bytes sent and received on row 0",
            "/ (B|KiB|MiB)$/.test(cell(0, 'sent')) && cell(0, 'received') !== '0 B'",
        ),
        (
            "the upstream's totals",
            "parseInt(total('requests')) > 0 && parseInt(total('5xx')) > 0",
        ),
        (
            "a sparkline of 3 samples",
            "row(0).querySelector('polyline').getAttribute('points').split(' ').length >= 3",
        ),
    ] {
        let expr = format!(
            "(() => {{ const row = i => document.querySelector(`tr[data-upstream=\"up\"][data-id=\"${{i}}\"]`); \
             const cell = (i, k) => row(i).querySelector(`td.${{k}}`).textContent; \
             const total = k => document.querySelector(`dl.totals [data-key=\"${{k}}\"] dd`).textContent; \
             return {expr}; }})()"
        );
        b.wait_js(&expr, FIRST)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    if shot {
        // A longer history with a burst in it, for docs/status.png.
        std::thread::sleep(Duration::from_secs(12));
        let burst = spawn_load(
            port,
            "/",
            LoadOpts {
                threads: 3,
                pause: Duration::ZERO,
                ..opts
            },
        );
        std::thread::sleep(Duration::from_secs(8));
        burst.stop();
        std::thread::sleep(Duration::from_secs(6));
    }
    let png = b.screenshot().expect("screenshot");
    for load in [ok, failing] {
        load.stop();
    }
    if shot {
        let path = root().join("docs/status.png");
        fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        say(&format!("wrote {} ({} bytes)", path.display(), png.len()));
    }
}

/// Every state the API reports shows on the page: `up`, `draining` (a
/// drained server with a request in flight), `unavail` (a server that
/// refuses connections, after `max_fails=1`) and `down` (set down through
/// the API).
#[test]
fn status_page_shows_every_state() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("t", 3);
    let refused = refused_addr();
    let port = free_port();
    // Ids: 0 up, 1 draining, 2 unavail (refuses), 3 down.
    let upstream = format!(
        "        ha_balance round_robin;
        server {};
        server {};
        server {refused} max_fails=1 fail_timeout=60s;
        server {};\n",
        backends[0].addr(),
        backends[1].addr(),
        backends[2].addr()
    );
    let _ngx = start_upstream(port, &upstream, " write=on");
    // A try on the refusing server disables it (the request is retried).
    let tried = wait_until(Duration::from_secs(10), || {
        let _ = get(port, "/");
        api_server(port, 2)["unavail"] == 1
    });
    assert!(
        tried,
        "server 2 never became unavailable: {}",
        api_server(port, 2)
    );
    let r = http::request(
        port,
        "PATCH",
        "/api/upstreams/up/servers/3",
        br#"{"down":true}"#,
    )
    .expect("PATCH down");
    assert_eq!(r.status, 200, "{}", r.text());
    // The page is open before the drain, so that it shows `draining`
    // while the slow request lasts (8 s; the page polls every second).
    let b = Browser::start().expect("start headless chromium");
    b.goto(&format!("http://127.0.0.1:{port}/api/"))
        .expect("open status page");
    b.wait_js(
        "document.querySelectorAll('tr[data-upstream=\"up\"]').length === 4",
        FIRST,
    )
    .unwrap_or_else(|e| panic!("page never listed 4 servers: {e}"));
    // Slow requests until one is in flight on server 1, then drain it.
    let slow = spawn_load(
        port,
        "/?delay=8000",
        LoadOpts {
            threads: 4,
            per_thread: 1,
            pause: Duration::ZERO,
            max_time: Duration::from_secs(30),
        },
    );
    let held = wait_until(Duration::from_secs(5), || backends[1].stats().inflight > 0);
    assert!(held, "no slow request reached server 1");
    let r = http::request(
        port,
        "PATCH",
        "/api/upstreams/up/servers/1",
        br#"{"drain":true}"#,
    )
    .expect("PATCH drain");
    assert_eq!(r.status, 200, "{}", r.text());
    let want = ["up", "draining", "unavail", "down"];
    let shown = b.wait("every state", SHOW, |b| {
        let states: Vec<Option<String>> = (0..4).map(|i| row_state(b, i)).collect();
        Ok((states.iter().map(|s| s.as_deref()).eq(want.map(Some))).then_some(()))
    });
    let states: Vec<Option<String>> = (0..4).map(|i| row_state(&b, i)).collect();
    assert!(
        shown.is_ok(),
        "page shows {states:?}, the API {:?}",
        (0..4)
            .map(|i| api_server(port, i)["state"].clone())
            .collect::<Vec<_>>()
    );
    // The state cells read the state, in words, not only in colour.
    for (i, s) in want.iter().enumerate() {
        let cell = b
            .find(&format!("tr[data-id=\"{i}\"] td.state"))
            .unwrap()
            .expect("state cell");
        assert_eq!(b.text(&cell).unwrap(), *s, "row {i}");
    }
    drop(b);
    let r = slow.join();
    assert!(r.statuses.values().sum::<usize>() == 4, "{:?}", r.failures);
}

/// The active health states show too, in words and in their own colours:
/// `checking` (a `mandatory` server whose first check hangs) and
/// `unhealthy` (one whose `/healthz` answers 503), next to `up`.
#[test]
fn status_page_shows_health_states() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("h", 3);
    backends[1].set_health("fail");
    backends[2].set_health("hang");
    let port = free_port();
    // A 9 s timeout: server 2 stays `checking` that long.
    let upstream = format!(
        "        ha_balance round_robin;
        ha_check interval=10s timeout=9s fails=1 uri=/healthz mandatory;
{}",
        server_lines(&backends, &["", "", ""])
    );
    let _ngx = start_upstream(port, &upstream, "");
    let b = Browser::start().expect("start headless chromium");
    b.goto(&format!("http://127.0.0.1:{port}/api/"))
        .expect("open status page");
    let want = ["up", "unhealthy", "checking"];
    let shown = b.wait("health states", FIRST, |b| {
        let states: Vec<Option<String>> = (0..3).map(|i| row_state(b, i)).collect();
        Ok((states.iter().map(|s| s.as_deref()).eq(want.map(Some))).then_some(()))
    });
    assert!(
        shown.is_ok(),
        "page shows {:?}, the API {:?}",
        (0..3).map(|i| row_state(&b, i)).collect::<Vec<_>>(),
        (0..3)
            .map(|i| api_server(port, i)["state"].clone())
            .collect::<Vec<_>>()
    );
    let mut colours = Vec::new();
    for (i, s) in want.iter().enumerate() {
        let cell = b
            .find(&format!("tr[data-id=\"{i}\"] td.state"))
            .unwrap()
            .expect("state cell");
        assert_eq!(b.text(&cell).unwrap(), *s, "row {i}");
        let colour = b
            .execute(
                "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor;",
                &[serde_json::json!(format!(
                    "tr[data-id=\"{i}\"] td.state span"
                ))],
            )
            .unwrap();
        colours.push(colour.as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        colours,
        ["rgb(26, 127, 55)", "rgb(125, 16, 16)", "rgb(9, 105, 218)"],
        "up green, unhealthy dark red, checking blue"
    );
}

/// An upstream that learns sessions: a Bound column (the share of each
/// server's requests a session sent there) and the learn zone's line
/// (sessions held / capacity, evicted, expired).
#[test]
fn status_page_shows_sessions() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("x", 3);
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;
        ha_sticky learn create=$upstream_cookie_sid lookup=$cookie_sid zone=learnt:1m;
{}",
        server_lines(&backends, &["", "", ""])
    );
    let _ngx = start_upstream(port, &upstream, "");
    for sid in ["a", "b"] {
        let r = get(port, &format!("/?setsid={sid}")).expect("GET setsid");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Requests of session `a` only, for at most 60 s: its server's share
    // of bound requests is 100%.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bound = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let until = std::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < until
            {
                let _ = http::get_with(port, "/", &[("Cookie", "sid=a")]);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let b = open(port, "/api/");
    let shown = b.wait_js(
        "(() => { const s = document.querySelector('section[data-upstream=\"up\"] .sessions'); \
         const bound = [...document.querySelectorAll('tr[data-upstream=\"up\"] td.bound')]; \
         return s !== null && !s.hidden && s.textContent.includes('zone learnt') \
           && s.textContent.includes(': 2 / ') && s.textContent.includes('evicted 0') \
           && document.querySelector('th.c-bound').textContent === 'Bound' \
           && bound.length === 3 && bound.some(td => td.textContent === '100.0%'); })()",
        FIRST,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = bound.join();
    if let Err(e) = shown {
        let line = b
            .find("section .sessions")
            .unwrap()
            .map(|e| b.text(&e).unwrap());
        let cells: Vec<String> = b
            .find_all("td.bound")
            .unwrap()
            .iter()
            .map(|e| b.text(e).unwrap())
            .collect();
        panic!("sessions not shown: {e}; line {line:?}, bound cells {cells:?}");
    }
}

/// An upstream with a queue: while requests wait, its line says how many
/// of how many places; once they were served, the served count.
#[test]
fn status_page_shows_the_queue() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("w", 3);
    for b in &backends {
        b.set_mode("delay:4000");
    }
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;
        ha_queue 10;
{}",
        server_lines(&backends, &["max_conns=1", "max_conns=1", "max_conns=1"])
    );
    let _ngx = start_upstream(port, &upstream, "");
    // 3 hold the servers for 4 s, 3 wait behind them.
    let hs: Vec<_> = (0..6)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 3 { 300 } else { 0 }));
            std::thread::spawn(move || get(port, "/"))
        })
        .collect();
    let b = open(port, "/api/");
    let shown = b.wait_js(
        "(() => { const s = document.querySelector('section[data-upstream=\"up\"] .queue'); \
         return s !== null && !s.hidden && s.textContent.includes('3/10'); })()",
        FIRST,
    );
    let line = b
        .find("section .queue")
        .unwrap()
        .map(|e| b.text(&e).unwrap());
    for h in hs {
        let r = h.join().unwrap().expect("GET /");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    if let Err(e) = shown {
        panic!("queue not shown: {e}; line {line:?}");
    }
    let served = b.wait_js(
        "(() => { const s = document.querySelector('section[data-upstream=\"up\"] .queue'); \
         return s !== null && s.textContent.includes('0/10') \
           && s.textContent.includes('served 3'); })()",
        FIRST,
    );
    if let Err(e) = served {
        let line = b
            .find("section .queue")
            .unwrap()
            .map(|e| b.text(&e).unwrap());
        panic!("served waiters not shown: {e}; line {line:?}");
    }
}

/// An upstream name with every character HTML escapes.
const ODD: &str = "odd<&\"'>";

/// Upstream `up` (3 servers, active checks every 500 ms, server 1's
/// failing with 503) proxied at `/`, and upstream [`ODD`] (a refusing
/// server and backend 0), not proxied; the API at `/api/` with
/// `api_args`. Waits until the checks have judged every server of `up`.
fn start_checked(backends: &[Backend], api_args: &str) -> Nginx {
    backends[1].set_health("fail");
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;
        ha_check interval=500ms timeout=400ms fails=1 passes=1 uri=/healthz;
{}",
        server_lines(backends, &["weight=3", "", ""])
    );
    let odd = format!(
        "    upstream \"{}\" {{
        ha_balance round_robin;
        server {} max_fails=1;
        server {};
    }}
",
        ODD.replace('"', "\\\""),
        refused_addr(),
        backends[0].addr()
    );
    let block = proxy_block(port, &upstream, "").replacen(
        "        location / {",
        &format!("        location /api/ {{ ha_api{api_args}; }}\n        location / {{"),
        1,
    );
    let ngx = Nginx::start(&format!("{odd}{block}"), WORKERS);
    let judged = wait_until(FIRST, || {
        (0..3).all(|i| api_server(port, i)["health_checks"]["last_passed"].is_boolean())
            && api_server(port, 1)["state"] == "unhealthy"
    });
    assert!(judged, "checks never judged: {}", api_server(port, 1));
    ngx
}

fn api_upstreams(port: u16) -> Value {
    let r = http::get(port, "/api/upstreams").expect("GET /api/upstreams");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("JSON")
}

/// Every table's upstream, columns (`data-cols`) and headers, the text
/// of every cell of its server rows, and its totals: `[upstream, cols,
/// [th], [[id, state, [[key, label, text]]]], [total]]`, the key being
/// the cell's column (its class), the text of a weight form's cell with
/// the input's value.
const CELLS_JS: &str = "const key = td => [...td.classList].find(c => c !== 'num' && c !== 'failed' \
      && !c.startsWith('st-')); \
    const text = td => td.textContent + (td.querySelector('input') ? '=' + td.querySelector('input').value : ''); \
    return [...document.querySelectorAll('#upstreams > section')].map(s => \
    [s.dataset.upstream, s.dataset.cols, \
     [...s.querySelectorAll('thead th')].map(th => th.className + ':' + th.textContent), \
     [...s.querySelectorAll('tbody tr')].map(tr => [tr.dataset.id, tr.dataset.state, \
        [...tr.children].map(td => [key(td), td.dataset.label, text(td)])]), \
     [...s.querySelectorAll('dl.totals div')].map(d => d.dataset.key + ': ' + d.textContent)]);";

/// The shape of a cell's text whose figures move between two reads:
/// for `since` whether it is a dash; else the text before its first `, `
/// (a duration, a time ago) with each number as `#`, without the run of
/// checks (`(# in a row)`, shown from 2).
fn shape(key: &str, text: &str) -> String {
    if key == "since" {
        return (text == "\u{2013}").to_string();
    }
    let mut out = String::new();
    for c in text.split(", ").next().unwrap_or_default().chars() {
        match c {
            '0'..='9' | '.' if out.ends_with('#') => {}
            '0'..='9' => out.push('#'),
            c => out.push(c),
        }
    }
    out.trim_end_matches(" (# in a row)").to_owned()
}

/// What differs between two [`CELLS_JS`] reads, the cells of `moving`
/// columns by their [`shape`]; empty when they agree.
fn differences(a: &Value, b: &Value, moving: &[&str]) -> Vec<String> {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let (a, b) = (list(a), list(b));
    let mut out = Vec::new();
    if a.len() != b.len() {
        out.push(format!("{} tables, then {}", a.len(), b.len()));
    }
    for (ta, tb) in a.iter().zip(&b) {
        for k in [0, 1, 2, 4] {
            if ta[k] != tb[k] {
                out.push(format!("table {}: {} then {}", ta[0], ta[k], tb[k]));
            }
        }
        let (ra, rb) = (list(&ta[3]), list(&tb[3]));
        if ra.len() != rb.len() {
            out.push(format!(
                "table {}: {} rows, then {}",
                ta[0],
                ra.len(),
                rb.len()
            ));
        }
        for (xa, xb) in ra.iter().zip(&rb) {
            let (ca, cb) = (list(&xa[2]), list(&xb[2]));
            if xa[0] != xb[0] || xa[1] != xb[1] || ca.len() != cb.len() {
                out.push(format!(
                    "table {}: row {} {} then {} {}",
                    ta[0], xa[0], xa[1], xb[0], xb[1]
                ));
                continue;
            }
            for (c, d) in ca.iter().zip(&cb) {
                let key = c[0].as_str().unwrap_or_default();
                let text = |v: &Value| {
                    let t = v.as_str().unwrap_or_default();
                    match moving.contains(&key) {
                        true => shape(key, t),
                        false => t.to_owned(),
                    }
                };
                if (&c[0], &c[1]) != (&d[0], &d[1]) || text(&c[2]) != text(&d[2]) {
                    out.push(format!("table {} row {} cell {c} then {d}", ta[0], xa[0]));
                }
            }
        }
    }
    out
}

/// The HTML the server sends lists every upstream and server with its
/// figures, before and without any script: over HTTP, and in Chromium
/// with JavaScript off (where it stays as sent: no poll). Names are
/// escaped (the upstream [`ODD`] reads as itself, in text and in
/// attributes). The script then adopts the rows and renders the same
/// text in every cell whose figure does not move between two reads.
#[test]
fn status_page_is_complete_before_its_script() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("r", 3);
    let ngx = start_checked(&backends, " write=on");
    let port = ngx.port();
    for _ in 0..20 {
        let r = get(port, "/").expect("GET /");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let api = api_upstreams(port);

    // Over HTTP: the page as sent.
    let r = http::get_with(port, "/api/", &[("Accept", "text/html")]).expect("GET /api/");
    let html = r.text();
    assert_eq!(r.status, 200, "{html:.300}");
    for id in 0..3 {
        let row = format!("<tr data-upstream=\"up\" data-id=\"{id}\"");
        assert_eq!(html.matches(&row).count(), 1, "{row} in {html:.300}");
        let at = html.find(&row).unwrap();
        let tr = &html[at..at + html[at..].find("</tr>").unwrap()];
        let want = format!(
            "data-label=\"Requests\">{}</td>",
            api["up"]["peers"][id]["requests"]
        );
        assert!(tr.contains(&want), "{want} in {tr}");
        assert!(tr.contains(&backends[id].addr()), "{tr}");
    }
    let odd = "odd&lt;&amp;&quot;&#39;&gt;";
    assert!(
        html.contains(&format!("<section data-upstream=\"{odd}\""))
            && html.contains(&format!("<span class=\"title\">{odd}</span>"))
            && html
                .matches(&format!("<tr data-upstream=\"{odd}\""))
                .count()
                == 2,
        "the odd upstream, escaped: {html:.300}"
    );
    assert!(!html.contains("odd<"), "a raw name in the HTML");

    // In Chromium without JavaScript.
    let b = Browser::start_with(1280, 800, false).expect("start headless chromium");
    b.goto(&format!("http://127.0.0.1:{port}/api/"))
        .expect("open status page");
    let rows: Vec<(String, String)> = b
        .find_all("tr[data-upstream]")
        .unwrap()
        .iter()
        .map(|e| {
            (
                b.attr(e, "data-upstream").unwrap().unwrap_or_default(),
                b.attr(e, "data-id").unwrap().unwrap_or_default(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        (ODD, "0"),
        (ODD, "1"),
        ("up", "0"),
        ("up", "1"),
        ("up", "2"),
    ]
    .iter()
    .map(|(u, i)| (u.to_string(), i.to_string()))
    .collect();
    assert_eq!(rows, want, "every server of every upstream, in order");
    let title = b.find("section .title").unwrap().expect("a title");
    assert_eq!(b.text(&title).unwrap(), ODD);
    let cell = |id: usize, key: &str| {
        let e = b
            .find(&format!(
                "tr[data-upstream=\"up\"][data-id=\"{id}\"] td.{key}"
            ))
            .unwrap()
            .unwrap_or_else(|| panic!("cell {key} of row {id}"));
        b.text(&e).unwrap()
    };
    let total = |key: &str| {
        let e = b
            .find(&format!(
                "section[data-upstream=\"up\"] dl.totals [data-key=\"{key}\"] dd"
            ))
            .unwrap()
            .unwrap_or_else(|| panic!("total {key}"));
        b.text(&e).unwrap()
    };
    let t = &api["up"]["totals"];
    assert_eq!(total("requests"), t["requests"].to_string());
    assert_eq!(total("2xx"), t["responses"]["2xx"].to_string());
    assert_eq!(total("requests"), "20");
    assert_eq!(total("sent"), hab_api::page::fmt::bytes(t["sent"].as_u64()));
    assert_eq!(
        total("received"),
        hab_api::page::fmt::bytes(t["received"].as_u64())
    );
    assert_eq!(cell(1, "state"), "unhealthy");
    let w = b
        .execute(
            "return document.querySelector('tr[data-upstream=\"up\"][data-id=\"0\"] input[name=weight]').value;",
            &[],
        )
        .unwrap();
    assert_eq!(w, "3", "the weight form holds the weight");
    // The checks: made, failed, turned unhealthy; the last one failed on
    // server 1 (503) and passed on server 0, with the reason when the
    // API gives one, and how many such in a row (the checks go on, so
    // the counts are read as shapes).
    assert_eq!(shape("checks", &cell(1, "checks")), "# / # / #");
    assert!(cell(1, "checks").ends_with(" / 1"), "{}", cell(1, "checks"));
    let h1 = &api["up"]["peers"][1]["health_checks"];
    let last1 = cell(1, "last");
    match h1["last_reason"].as_str() {
        Some(why) => assert!(
            last1.starts_with(&format!("failed: {why}")),
            "{last1} lacks {why}"
        ),
        None => assert_eq!(shape("last", &last1), "failed", "{last1}"),
    }
    assert!(cell(0, "last").starts_with("passed"), "{}", cell(0, "last"));
    // Time in the state: server 1's checks made it unhealthy (the API's
    // `state_since`); server 0 has been up since nginx started (no
    // `state_since`: a dash).
    assert!(api["up"]["peers"][1]["state_since"].is_string(), "{api}");
    let since = cell(1, "since");
    assert!(
        since.ends_with(" ms") || since.ends_with(" s"),
        "time in state {since:?}"
    );
    assert!(api["up"]["peers"][0].get("state_since").is_none(), "{api}");
    assert_eq!(cell(0, "since"), "\u{2013}");
    // Recent response time percentiles: server 0 and the upstream.
    let p = &api["up"]["peers"][0]["percentiles"];
    assert_eq!(
        cell(0, "percentiles"),
        format!(
            "{} / {} / {}",
            hab_api::page::fmt::tenths(p["p50"].as_f64().expect("p50")),
            hab_api::page::fmt::tenths(p["p95"].as_f64().expect("p95")),
            hab_api::page::fmt::tenths(p["p99"].as_f64().expect("p99"))
        )
    );
    assert!(
        total("percentiles").matches(" / ").count() == 2,
        "{}",
        total("percentiles")
    );
    // The script is off: the figures stay as sent.
    std::thread::sleep(Duration::from_millis(1500));
    let polled = b
        .execute(
            "return document.getElementById('updated').dataset.polled === undefined \
             && document.querySelector('noscript') !== null;",
            &[],
        )
        .unwrap();
    assert_eq!(polled, Value::Bool(true), "the script ran");
    let before = b.execute(CELLS_JS, &[]).unwrap();
    drop(b);

    // With the script: it takes the rows over and writes the same text
    // (checks and times move between two reads: compared by shape).
    let b = Browser::start().expect("start headless chromium");
    b.goto(&format!("http://127.0.0.1:{port}/api/"))
        .expect("open status page");
    b.wait_js(
        "document.getElementById('updated').dataset.polled === '1'",
        FIRST,
    )
    .expect("the script's first refresh");
    let after = b.execute(CELLS_JS, &[]).unwrap();
    let diff = differences(&before, &after, &["since", "checks", "last"]);
    assert!(
        diff.is_empty(),
        "the server's render, then the script's:\n{}",
        diff.join("\n")
    );
    assert_eq!(before.as_array().unwrap().len(), 2);
    assert_eq!(before[1][3].as_array().unwrap().len(), 3);
}

/// The weight form: a new weight typed in and sent with Enter reaches the
/// API; the page then shows the configured weight beside it and Reset
/// brings it back; a weight the API refuses (a round-robin sequence too
/// long for its room) is shown as an error and changes nothing.
#[test]
fn status_page_sets_a_weight() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("v", 3);
    let ngx = start(&backends, " write=on");
    let port = ngx.port();
    let b = open(port, "/api/");
    let input = |b: &Browser| {
        b.find("tr[data-upstream=\"up\"][data-id=\"1\"] input[name=\"weight\"]")
            .unwrap()
            .expect("weight input of row 1")
    };
    let value = b
        .execute("return arguments[0].value;", &[input(&b).to_json()])
        .unwrap();
    assert_eq!(value, "1");
    let i = input(&b);
    b.clear(&i).expect("clear");
    b.send_keys(&i, "7\u{E007}").expect("type 7, Enter");
    let set = wait_until(SHOW, || api_server(port, 1)["weight"] == 7);
    let err = b.find("#error-text").unwrap().map(|e| b.text(&e).unwrap());
    assert!(
        set,
        "weight 7 never reached the API: {}; page error {err:?}",
        api_server(port, 1)
    );
    b.wait_js(
        "(() => { const w = document.querySelector('tr[data-upstream=\"up\"][data-id=\"1\"] td.weight'); \
         return w.querySelector('.conf').textContent === ' (1)' \
           && !w.querySelector('[data-action=\"weight-reset\"]').hidden \
           && w.querySelector('input').value === '7'; })()",
        SHOW,
    )
    .expect("row 1 shows weight 7 (configured 1) and Reset");
    assert_eq!(api_server(port, 0)["weight"], 3, "other rows unchanged");

    let reset = b
        .find("tr[data-upstream=\"up\"][data-id=\"1\"] button[data-action=\"weight-reset\"]")
        .unwrap()
        .expect("Reset");
    b.click(&reset).expect("click Reset");
    let back = wait_until(SHOW, || {
        let s = api_server(port, 1);
        s["weight"] == 1 && s["configured_weight"] == 1
    });
    assert!(back, "Reset never reached the API: {}", api_server(port, 1));

    // 1,000,000 + 3 + 1 entries do not fit round robin's room: 507.
    let i = input(&b);
    b.clear(&i).expect("clear");
    b.send_keys(&i, "1000000\u{E007}").expect("type, Enter");
    let shown = b.wait_js(
        "(() => { const e = document.getElementById('error'); \
         return !e.hidden && e.textContent.includes('HTTP 507'); })()",
        SHOW,
    );
    let text = b.find("#error-text").unwrap().map(|e| b.text(&e).unwrap());
    assert!(shown.is_ok(), "the refusal is not shown: {text:?}");
    assert_eq!(api_server(port, 1)["weight"], 1, "refused: unchanged");
    // Below 1: the form refuses it before anything is sent.
    let i = input(&b);
    b.clear(&i).expect("clear");
    b.send_keys(&i, "0\u{E007}").expect("type 0, Enter");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(api_server(port, 1)["weight"], 1, "0 was sent");
    let invalid = b
        .execute(
            "return arguments[0].matches(':invalid');",
            &[input(&b).to_json()],
        )
        .unwrap();
    assert_eq!(invalid, Value::Bool(true));
}

/// At a phone's width (390 px) the page does not scroll sideways: every
/// server is a card, each figure a line with its label, the controls
/// inside the window; with the script and without it.
#[test]
fn status_page_on_a_phone() {
    if !ready() {
        return;
    }
    let _serial = serial();
    let backends = Backend::start_many("m", 3);
    let ngx = start_checked(&backends, " write=on");
    let port = ngx.port();
    for _ in 0..10 {
        let _ = get(port, "/");
    }
    for javascript in [true, false] {
        let b = Browser::start_with(390, 844, javascript).expect("start headless chromium");
        b.goto(&format!("http://127.0.0.1:{port}/api/"))
            .expect("open status page");
        if javascript {
            b.wait_js(
                "document.getElementById('updated').dataset.polled === '1'",
                FIRST,
            )
            .expect("first refresh");
        }
        let v = b
            .execute(
                "const w = window.innerWidth, doc = document.documentElement; \
                 const tds = [...document.querySelectorAll('tbody td')]; \
                 const tr = document.querySelector('tbody tr'); \
                 const inside = [...document.querySelectorAll('td, dl.totals div, h2, button, input')] \
                   .filter(e => e.getClientRects().length > 0) \
                   .every(e => { const r = e.getBoundingClientRect(); \
                                 return r.left >= 0 && r.right <= w + 0.5; }); \
                 return { width: w, scroll: doc.scrollWidth, \
                   card: getComputedStyle(tr).display, \
                   head: getComputedStyle(document.querySelector('thead')).display, \
                   labels: tds.every(td => getComputedStyle(td, '::before').content \
                     === JSON.stringify(td.dataset.label)), \
                   inside, rows: document.querySelectorAll('tbody tr').length };",
                &[],
            )
            .unwrap();
        let png = b.screenshot().expect("screenshot");
        if javascript && std::env::var("HAB_SCREENSHOT").is_ok_and(|v| v == "1") {
            let path = root().join("docs/status-phone.png");
            fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            say(&format!("wrote {} ({} bytes)", path.display(), png.len()));
        }
        assert_eq!(v["width"], 390, "window width: {v}");
        assert!(
            v["scroll"].as_u64() <= v["width"].as_u64(),
            "the page scrolls sideways (script {javascript}): {v}"
        );
        assert_eq!(v["card"], "grid", "a server is a card: {v}");
        assert_eq!(v["head"], "none", "{v}");
        assert_eq!(v["labels"], true, "every figure has its label: {v}");
        assert_eq!(v["inside"], true, "everything within the window: {v}");
        assert_eq!(v["rows"], 5, "{v}");
    }
}
