//! End-to-end: the live status page (issue 7) in a real headless Chromium
//! against real nginx with 4 workers: every server listed, a drain through
//! the API reaching the page, the page's Undrain button reaching the API,
//! no buttons when read only, sessions (the Bound column and the learn
//! zone's line) where an upstream has them, and (with `HAB_SCREENSHOT=1`)
//! a screenshot under load written to `docs/status.png`.

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
         && document.getElementById('updated').textContent !== 'never'",
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
    let b = open_sized(port, "/api/", (1280, 480));
    // Every figure column shows live statistics.
    for (what, expr) in [
        (
            "request rates of rows 0 and 1",
            "[0, 1].every(i => parseFloat(cell(i, 6)) > 0)",
        ),
        ("no rate on drained row 2", "cell(2, 6) === '0.0'"),
        (
            "a 5xx rate on row 0",
            "/^[0-9.]+%$/.test(cell(0, 7)) && parseFloat(cell(0, 7)) > 0",
        ),
        ("row 1 slower than 25 ms", "parseFloat(cell(1, 8)) >= 25"),
        (
            "a sparkline of 3 samples",
            "row(0).querySelector('polyline').getAttribute('points').split(' ').length >= 3",
        ),
    ] {
        let expr = format!(
            "(() => {{ const row = i => document.querySelector(`tr[data-upstream=\"up\"][data-id=\"${{i}}\"]`); \
             const cell = (i, n) => row(i).children[n - 1].textContent; return {expr}; }})()"
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
