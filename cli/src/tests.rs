//! Tests of the command layer: arguments, exit codes, the HTTP calls made
//!
//! A canned HTTP server on 127.0.0.1 (one thread, a bounded number of
//! connections, read timeouts) stands in for `ha_api`, so the requests
//! `hab` sends and the way it reports answers are checked without nginx.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::*;

/// One request as the fake API saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    body: String,
}

/// Serves `answers` (status, JSON body) in order, one per connection;
/// returns the base URL and a receiver of what was asked.
fn fake_api(answers: Vec<(u16, String)>) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for (status, body) in answers {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                return;
            }
            let mut len = 0usize;
            for _ in 0..100 {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut buf = vec![0; len.min(64 * 1024)];
            let _ = reader.read_exact(&mut buf);
            let mut parts = first.split_whitespace();
            let _ = tx.send(Seen {
                method: parts.next().unwrap_or("").to_owned(),
                path: parts.next().unwrap_or("").to_owned(),
                body: String::from_utf8_lossy(&buf).into_owned(),
            });
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://127.0.0.1:{port}/api/"), rx)
}

fn hab(args: &[&str]) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = main_with(
        std::iter::once("hab").chain(args.iter().copied()),
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn upstream_app() -> String {
    let all: serde_json::Value = serde_json::from_str(status::tests::FIXTURE).unwrap();
    all["app"].to_string()
}

fn server_json(id: u32, state: &str, weight: u32) -> String {
    format!(
        r#"{{"id": {id}, "server": "127.0.0.1:8082", "name": "127.0.0.1:8082", "backup": false,
            "weight": {weight}, "configured_weight": 1, "state": "{state}", "active": 3,
            "max_conns": 0, "down": false, "drain": true}}"#
    )
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn status_prints_tables() {
    let (url, rx) = fake_api(vec![(200, status::tests::FIXTURE.to_owned())]);
    let (code, out, err) = hab(&["status", &url]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains("upstream app  policy round_robin  generation 3"),
        "{out}"
    );
    assert!(out.contains("10 (conf 1)"), "{out}");
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        (
            "GET",
            format!("/api/upstreams?fields={}", api::TABLE_FIELDS).as_str()
        )
    );
}

#[test]
fn status_json() {
    let (url, _rx) = fake_api(vec![(200, status::tests::FIXTURE.to_owned())]);
    let (code, out, err) = hab(&["status", "--json", &url]);
    assert_eq!(code, EXIT_OK, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["app"]["peers"][1]["state"], "draining");
}

#[test]
fn status_json_is_the_api_answer() {
    // Fields hab does not model (retiring, downstart, new ones) survive.
    let (url, _rx) = fake_api(vec![(200, status::tests::FIXTURE_STATS.to_owned())]);
    let (code, out, err) = hab(&["status", "--json", &url]);
    assert_eq!(code, EXIT_OK, "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sent: serde_json::Value = serde_json::from_str(status::tests::FIXTURE_STATS).unwrap();
    assert_eq!(got, sent);
    assert_eq!(got["app"]["retiring"][0]["requests"], 5);
    assert_eq!(got["app"]["peers"][2]["checking_something_new"][1], 2);
}

#[test]
fn status_prints_statistics() {
    let (url, _rx) = fake_api(vec![(200, status::tests::FIXTURE_STATS.to_owned())]);
    let (code, out, err) = hab(&["status", &url]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains("REQUESTS  5XX  FAILS  UNAVAIL  RESP_MS")
            && out.contains("98765432  432      0        0     12.5"),
        "{out}"
    );
}

/// The frames of `hab top` output that is not a terminal.
fn frames(out: &str) -> Vec<&str> {
    out.split("\n\n").collect()
}

#[test]
fn top_draws_frames_and_rides_out_errors() {
    let later = {
        let mut v: serde_json::Value = serde_json::from_str(status::tests::FIXTURE_STATS).unwrap();
        v["app"]["peers"][0]["requests"] = 1500.into();
        v.to_string()
    };
    let (url, rx) = fake_api(vec![
        (200, status::tests::FIXTURE_STATS.to_owned()),
        (502, "<html>bad gateway</html>".to_owned()),
        (200, later),
    ]);
    let start = std::time::Instant::now();
    let (code, out, err) = hab(&["top", &url, "--iterations", "3", "--interval", "0.2"]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(err, "");
    // 3 polls, 2 intervals apart
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(!out.contains('\x1b'), "no escape codes off a terminal");
    let f = frames(&out);
    assert_eq!(f.len(), 3, "{out}");
    for frame in &f {
        assert!(frame.starts_with("hab top  "), "{frame}");
        assert!(frame.contains("http://127.0.0.1:"), "{frame}");
    }
    assert!(f[0].contains("upstreams 1  req/s -\n"), "{}", f[0]);
    assert!(
        f[0].contains("   0  127.0.0.1:8081  up             2      -"),
        "{}",
        f[0]
    );
    assert!(
        f[1].contains("  error: API refused (502): <html>bad gateway</html>"),
        "{}",
        f[1]
    );
    // The third frame's rates are against the first (the last answer):
    // 300 requests over the wall-clock time between the two answers,
    // about 0.4 s (less by the first poll's latency, more on a slow
    // machine); exact figures are checked on fixed times in top.rs.
    let row = f[2]
        .lines()
        .find(|l| l.contains("127.0.0.1:8081"))
        .expect("server row");
    let req_s: f64 = row.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(req_s > 0.0 && req_s <= 3000.0, "{row}");
    for _ in 0..3 {
        let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (
                "GET",
                format!("/api/upstreams?fields={}", api::TABLE_FIELDS).as_str()
            )
        );
    }
}

#[test]
fn top_exit_code_is_the_last_polls() {
    // Second poll: the fake API is gone, connection refused.
    let (url, _rx) = fake_api(vec![(200, status::tests::FIXTURE.to_owned())]);
    let (code, out, err) = hab(&["top", &url, "--iterations", "2", "--interval", "0.2"]);
    assert_eq!(code, EXIT_UNREACHABLE, "{out}{err}");
    assert!(err.starts_with("hab: API unreachable: "), "{err}");
    let f = frames(&out);
    assert_eq!(f.len(), 2, "{out}");
    assert!(f[0].contains("upstream app "), "{}", f[0]);
    assert!(f[1].contains("  error: API unreachable: "), "{}", f[1]);

    let (url, _rx) = fake_api(vec![(200, status::tests::FIXTURE.to_owned())]);
    let (code, out, err) = hab(&["top", &url, "--iterations", "1", "--upstream", "web"]);
    assert_eq!(code, EXIT_FAILED, "{out}{err}");
    assert!(
        out.contains("error: upstream web not found; upstreams: api, app"),
        "{out}"
    );

    let (url, _rx) = fake_api(vec![(200, status::tests::FIXTURE.to_owned())]);
    let (code, out, err) = hab(&["top", &url, "--iterations", "1", "--upstream", "api"]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains("upstream api ") && !out.contains("upstream app "),
        "{out}"
    );
}

#[test]
fn top_on_a_terminal_redraws_in_place() {
    let (url, _rx) = fake_api(vec![
        (200, status::tests::FIXTURE.to_owned()),
        (200, status::tests::FIXTURE.to_owned()),
    ]);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let args = ["hab", "top", &url, "--iterations", "2", "--interval", "0.2"];
    let code = main_to(args, &mut out, &mut err, true);
    assert_eq!(code, EXIT_OK);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.matches(top::CLEAR).count(), 2, "{out:?}");
    assert!(out.starts_with(top::CLEAR), "{out:?}");
    assert!(!out.contains("\n\n"), "{out:?}");
}

#[test]
fn top_usage_errors_exit_64() {
    for args in [
        vec!["top"],
        vec!["top", "http://x/api", "--interval", "0.1"],
        vec!["top", "http://x/api", "--interval", "0"],
        vec!["top", "http://x/api", "--interval", "soon"],
        vec!["top", "http://x/api", "--interval", "inf"],
        vec!["top", "http://x/api", "--interval", "3601"],
        vec!["top", "http://x/api", "--iterations", "0"],
        vec!["top", "http://x/api", "--iterations", "-1"],
    ] {
        let (code, _, err) = hab(&args);
        assert_eq!(code, EXIT_USAGE, "{args:?}: {err}");
    }
    let (code, _, err) = hab(&["top", "https://127.0.0.1/api", "--iterations", "1"]);
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("https is not supported"), "{err}");
}

#[test]
fn drain_resolves_then_patches() {
    let (url, rx) = fake_api(vec![
        (200, upstream_app()),
        (200, server_json(1, "draining", 1)),
    ]);
    let (code, out, err) = hab(&["drain", &url, "app", "127.0.0.1:8082"]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(
        out,
        "app #1 127.0.0.1:8082: state draining, weight 1, active 3\n"
    );
    let get = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", "/api/upstreams/app")
    );
    let patch = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.path, "/api/upstreams/app/servers/1");
    assert_eq!(patch.body, r#"{"drain":true}"#);
}

#[test]
fn every_admin_body() {
    let cases: &[(&[&str], &str)] = &[
        (&["undrain"], r#"{"drain":false}"#),
        (&["down"], r#"{"down":true}"#),
        (&["up"], r#"{"down":false,"drain":false}"#),
        (&["weight", "7"], r#"{"weight":7}"#),
        (&["weight", "default"], r#"{"weight":null}"#),
        (&["weight", "reset"], r#"{"weight":null}"#),
    ];
    for (cmd, want) in cases {
        let (url, rx) = fake_api(vec![(200, upstream_app()), (200, server_json(0, "up", 7))]);
        let mut args = vec![cmd[0], &url, "app", "app1.example.com"];
        args.extend_from_slice(&cmd[1..]);
        let (code, _, err) = hab(&args);
        assert_eq!(code, EXIT_OK, "{cmd:?}: {err}");
        let _get = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let patch = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(patch.path, "/api/upstreams/app/servers/0", "{cmd:?}");
        assert_eq!(patch.body, *want, "{cmd:?}");
    }
}

/// A server answer with `active` requests in flight, drained.
fn drained(active: u32) -> String {
    format!(
        r#"{{"id": 1, "server": "127.0.0.1:8082", "name": "127.0.0.1:8082", "backup": false,
            "weight": 1, "configured_weight": 1, "state": "draining", "active": {active},
            "max_conns": 0, "down": false, "drain": true}}"#
    )
}

#[test]
fn drain_wait_returns_once_the_server_is_idle() {
    let (url, rx) = fake_api(vec![
        (200, upstream_app()),
        (200, drained(2)),
        (200, drained(1)),
        (200, drained(0)),
    ]);
    let (code, out, err) = hab(&["drain", "--wait", &url, "app", "1"]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.contains("draining"), "{out}");
    let seen: Vec<_> = (0..4)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .map(|s| (s.method, s.path))
        .collect();
    assert_eq!(
        seen[1..],
        [
            (
                "PATCH".to_owned(),
                "/api/upstreams/app/servers/1".to_owned()
            ),
            ("GET".to_owned(), "/api/upstreams/app/servers/1".to_owned()),
            ("GET".to_owned(), "/api/upstreams/app/servers/1".to_owned()),
        ]
    );
    // Still busy when the time is up: exit 1, saying so.
    let answers = std::iter::once((200, upstream_app()))
        .chain(std::iter::repeat_with(|| (200, drained(3))).take(20))
        .collect();
    let (url, _rx) = fake_api(answers);
    let (code, out, err) = hab(&["drain", "--wait", "--timeout", "0.5", &url, "app", "1"]);
    assert_eq!((code, out.as_str()), (EXIT_FAILED, ""), "{err}");
    assert!(
        err.contains("still has 3 requests in flight after 0.5 s"),
        "{err}"
    );
}

#[test]
fn refusal_exits_1_with_the_error_text() {
    let body =
        r#"{"error": {"status": 405, "code": "MethodNotAllowed", "text": "write=on is not set"}}"#;
    let (url, _rx) = fake_api(vec![(200, upstream_app()), (405, body.to_owned())]);
    let (code, out, err) = hab(&["down", &url, "app", "0"]);
    assert_eq!(code, EXIT_FAILED);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "hab: API refused (405 MethodNotAllowed): write=on is not set\n"
    );

    let body =
        r#"{"error": {"status": 404, "code": "NotFound", "text": "upstream \"nope\" not found"}}"#;
    let (url, _rx) = fake_api(vec![(404, body.to_owned())]);
    let (code, _, err) = hab(&["drain", &url, "nope", "0"]);
    assert_eq!(code, EXIT_FAILED);
    assert!(
        err.contains("404") && err.contains("upstream \"nope\" not found"),
        "{err}"
    );
}

#[test]
fn unknown_server_exits_1_listing_candidates() {
    let (url, _rx) = fake_api(vec![(200, upstream_app())]);
    let (code, _, err) = hab(&["drain", &url, "app", "10.9.9.9:1"]);
    assert_eq!(code, EXIT_FAILED);
    assert!(
        err.contains("no server of upstream app matches") && err.contains("#1 127.0.0.1:8082"),
        "{err}"
    );
}

#[test]
fn bad_answer_exits_1() {
    let (url, _rx) = fake_api(vec![(200, "not json".to_owned())]);
    let (code, _, err) = hab(&["status", &url]);
    assert_eq!(code, EXIT_FAILED);
    assert!(
        err.starts_with("hab: unexpected answer to upstreams"),
        "{err}"
    );
}

#[test]
fn unreachable_exits_2_in_one_line() {
    let url = format!("http://127.0.0.1:{}/api", closed_port());
    for args in [
        vec!["status", url.as_str()],
        vec!["drain", url.as_str(), "app", "0"],
    ] {
        let (code, out, err) = hab(&args);
        assert_eq!(code, EXIT_UNREACHABLE, "{args:?}: {err}");
        assert_eq!(out, "");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("hab: API unreachable: "), "{err}");
    }
}

#[test]
fn silent_server_times_out_as_unreachable() {
    // Accepts and never answers: the call timeout must end it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = thread::spawn(move || {
        let c = listener.accept();
        thread::sleep(api::CALL_TIMEOUT + Duration::from_secs(2));
        drop(c);
    });
    let start = std::time::Instant::now();
    let (code, _, err) = hab(&["status", &format!("http://127.0.0.1:{port}/api")]);
    assert_eq!(code, EXIT_UNREACHABLE, "{err}");
    assert!(start.elapsed() < api::CALL_TIMEOUT + Duration::from_secs(2));
    drop(hold);
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["drain", "http://x/api", "app"],
        vec!["weight", "http://x/api", "app", "0", "0"],
        vec!["weight", "http://x/api", "app", "0", "heavy"],
        vec!["weight", "http://x/api", "app", "0", "1000001"],
    ] {
        let (code, _, err) = hab(&args);
        assert_eq!(code, EXIT_USAGE, "{args:?}: {err}");
        assert!(!err.is_empty());
    }
    let (code, out, _) = hab(&["--help"]);
    assert_eq!(code, EXIT_OK);
    for cmd in [
        "status", "top", "drain", "undrain", "down", "up", "weight", "render",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from --help:\n{out}");
    }
    let (code, _, err) = hab(&["status", "https://127.0.0.1/api"]);
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("https is not supported"), "{err}");
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hab-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn render_to_stdout_and_file() {
    let dir = scratch("render");
    let yaml = dir.join("core-config.yaml");
    std::fs::write(&yaml, "backends: { web: { servers: [127.0.0.1:1] } }\n").unwrap();
    let y = yaml.to_str().unwrap();
    let (code, out, err) = hab(&["render", y]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains("upstream web {") && out.contains("server 127.0.0.1:1;"),
        "{out}"
    );

    let conf = dir.join("nginx.conf");
    let (code, out, err) = hab(&["render", y, "-o", conf.to_str().unwrap()]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(out, "");
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("upstream web {"));

    let (code, _, err) = hab(&["render", y, "--reload"]);
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("--reload needs -o"), "{err}");

    // `reload: true` in the file: printing it still works (a preview).
    std::fs::write(
        &yaml,
        "reload: true\nbackends: { web: { servers: [127.0.0.1:1] } }\n",
    )
    .unwrap();
    let (code, out, err) = hab(&["render", y]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.contains("# reload: true"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn render_sticky_example() {
    // The sessions example of docs/hab.md, through the command.
    let dir = scratch("render-sticky");
    let yaml = dir.join("sticky.yaml");
    std::fs::write(
        &yaml,
        "default_backend: web
backends:
  web:
    policy: least_conn
    servers: [\"10.0.0.1:8080\", \"10.0.0.2:8080\"]
    sticky:
      cookie: srv
      expires: 1h
      domain: .example.com
      path: /
      httponly: true
      secure: true
      samesite: lax
    routes: {\"10.0.0.1:8080\": a, \"10.0.0.2:8080\": b}
  api:
    hosts: [api.example.com]
    servers: [\"10.0.1.1:9000\", \"10.0.1.2:9000\"]
    sticky:
      route: [\"$cookie_route\", \"$arg_route\"]
    routes: {\"10.0.1.1:9000\": one, \"10.0.1.2:9000\": two}
  app:
    hosts: [app.example.com]
    servers: [\"10.0.2.1:9000\"]
    sticky:
      learn: {create: \"$upstream_cookie_sid\", lookup: \"$cookie_sid\", zone: \"sessions:1m\", timeout: 10m, header: false}
",
    )
    .unwrap();
    let (code, out, err) = hab(&["render", yaml.to_str().unwrap()]);
    assert_eq!(code, EXIT_OK, "{err}");
    let upstream = |name: &str| -> Vec<String> {
        let start = out.find(&format!("upstream {name} {{")).unwrap();
        let body = &out[start..];
        body[..body.find('}').unwrap()]
            .lines()
            .skip(1)
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    };
    assert_eq!(
        upstream("web"),
        [
            "ha_balance least_conn;",
            "ha_sticky cookie srv expires=1h domain=.example.com httponly samesite=lax secure path=/;",
            "server 10.0.0.1:8080;",
            "server 10.0.0.2:8080;",
            "ha_route 10.0.0.1:8080 a;",
            "ha_route 10.0.0.2:8080 b;",
        ],
        "{out}"
    );
    assert_eq!(
        upstream("api"),
        [
            "ha_balance round_robin;",
            "ha_sticky route $cookie_route $arg_route;",
            "server 10.0.1.1:9000;",
            "server 10.0.1.2:9000;",
            "ha_route 10.0.1.1:9000 one;",
            "ha_route 10.0.1.2:9000 two;",
        ],
        "{out}"
    );
    assert_eq!(
        upstream("app"),
        [
            "ha_balance round_robin;",
            "ha_sticky learn create=$upstream_cookie_sid lookup=$cookie_sid zone=sessions:1m timeout=10m;",
            "server 10.0.2.1:9000;",
        ],
        "{out}"
    );

    // A refusal names the file, the YAML path, the value and why.
    let text = std::fs::read_to_string(&yaml)
        .unwrap()
        .replace("samesite: lax", "samesite: loose");
    std::fs::write(&yaml, text).unwrap();
    let (code, out, err) = hab(&["render", yaml.to_str().unwrap()]);
    assert_eq!(code, EXIT_FAILED);
    assert_eq!(out, "");
    assert_eq!(
        err.trim_end(),
        format!(
            "hab: {}: backends.web.sticky.samesite: \"loose\" is not strict, lax or none",
            yaml.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn render_errors_name_file_and_position() {
    let dir = scratch("render-err");
    let yaml = dir.join("bad.yaml");
    std::fs::write(
        &yaml,
        "backends:\n  web:\n    connections: many\n    servers: [a:1]\n",
    )
    .unwrap();
    let (code, out, err) = hab(&["render", yaml.to_str().unwrap()]);
    assert_eq!(code, EXIT_FAILED);
    assert_eq!(out, "");
    assert!(
        err.starts_with(&format!("hab: {}: line 3 column 18: ", yaml.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    std::fs::write(
        &yaml,
        "default_backend: api\nbackends: { web: { servers: [a:1] } }\n",
    )
    .unwrap();
    let (code, _, err) = hab(&["render", yaml.to_str().unwrap()]);
    assert_eq!(code, EXIT_FAILED);
    assert!(
        err.contains("default_backend: \"api\" is not a backend"),
        "{err}"
    );

    let (code, _, err) = hab(&["render", dir.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("missing.yaml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reload_runs_nginx_test_then_reload() {
    // A stand-in "nginx" script records its arguments and keeps a copy of
    // the file -c names as it was when called; $FAIL_T makes -t fail.
    let dir = scratch("reload");
    let log = dir.join("calls");
    let seen = dir.join("seen");
    let fake = dir.join("nginx");
    let script = |fail_t: bool| {
        let fail = if fail_t {
            "case \"$*\" in *-t*) echo 'nginx: [emerg] bad' >&2; exit 1;; esac\n"
        } else {
            ""
        };
        format!(
            "#!/bin/sh\necho \"$@\" >> {log}\n\
             n=0; for a; do\n\
             [ \"$n\" = 1 ] && cat \"$a\" >> {seen}; n=0; [ \"$a\" = -c ] && n=1; done\n\
             {fail}exit 0\n",
            log = log.display(),
            seen = seen.display(),
        )
    };
    std::fs::write(&fake, script(false)).unwrap();
    let mut perm = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&fake, perm).unwrap();
    let yaml = dir.join("c.yaml");
    std::fs::write(
        &yaml,
        "reload: true\nbackends: { web: { servers: [a:1] } }\n",
    )
    .unwrap();
    let conf = dir.join("nginx.conf");
    let (code, out, err) = hab(&[
        "render",
        yaml.to_str().unwrap(),
        "-o",
        conf.to_str().unwrap(),
        "--nginx",
        fake.to_str().unwrap(),
        "-p",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.contains("nginx reloaded"), "{out}");
    let calls = std::fs::read_to_string(&log).unwrap();
    let d = dir.display();
    let c = conf.display();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    // nginx -t reads the new text from a file beside OUT, then OUT is
    // replaced and reloaded
    let tested = format!("-p {d} -c {d}/.nginx.conf.hab-");
    assert!(
        lines[0].starts_with(&tested) && lines[0].ends_with(" -t -q"),
        "{calls}"
    );
    assert_eq!(lines[1], format!("-p {d} -c {c} -s reload"));
    let rendered = std::fs::read_to_string(&conf).unwrap();
    assert!(rendered.contains("upstream web"), "{rendered}");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("{rendered}{rendered}")
    );

    // a failing test stops before the reload and leaves OUT as it was,
    // with no temporary file left
    std::fs::write(&fake, script(true)).unwrap();
    std::fs::remove_file(&log).unwrap();
    std::fs::write(&conf, "# the configuration in force\n").unwrap();
    std::fs::write(
        &yaml,
        "reload: true\nbackends: { web: { servers: [b:2] } }\n",
    )
    .unwrap();
    let (code, _, err) = hab(&[
        "render",
        yaml.to_str().unwrap(),
        "-o",
        conf.to_str().unwrap(),
        "--nginx",
        fake.to_str().unwrap(),
    ]);
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("[emerg] bad"), "{err}");
    assert!(err.contains("nginx.conf is unchanged"), "{err}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "# the configuration in force\n"
    );
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["c.yaml", "calls", "nginx", "nginx.conf", "seen"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A one-connection server on 127.0.0.1 that reads the request head, then
/// writes `head` and after it `drip` one byte at a time, `every` apart,
/// over and over, until the client goes away or 30 s have passed.
fn dripping_api(head: &'static [u8], drip: &'static [u8], every: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(stream);
        for _ in 0..100 {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
        }
        let mut stream = reader.into_inner();
        if stream.write_all(head).is_err() {
            return;
        }
        let end = std::time::Instant::now() + Duration::from_secs(30);
        for b in drip.iter().cycle() {
            if std::time::Instant::now() > end || stream.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(every);
        }
    });
    format!("http://127.0.0.1:{port}/api")
}

#[test]
fn a_dripping_answer_ends_at_the_call_timeout() {
    // A byte every 100 ms keeps every read of ureq's alive: only an
    // overall deadline ends the call (it hung for the whole drip before).
    let cases: [(&[u8], &[u8]); 2] = [
        // the body drips (a Content-Length far away)
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
              Content-Length: 100000\r\n\r\n",
            b" ",
        ),
        // the header block never ends
        (b"HTTP/1.1 200 OK\r\n", b"X-Drip: a\r\n"),
    ];
    for (head, drip) in cases {
        let url = dripping_api(head, drip, Duration::from_millis(500));
        let start = std::time::Instant::now();
        let (code, _, err) = hab(&["status", &url]);
        let took = start.elapsed();
        assert_eq!(code, EXIT_UNREACHABLE, "{err}");
        assert!(err.contains("no answer within 5s"), "{err}");
        // 5 s, and at most the last read's wait (ureq waits 1 s at least).
        assert!(
            took >= api::CALL_TIMEOUT && took < api::CALL_TIMEOUT + Duration::from_secs(3),
            "{took:?}"
        );
    }
}

#[test]
fn a_non_utf8_answer_or_an_unusable_url_exits_1() {
    // Raw bytes: fake_api writes a String, so answer by hand.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        for _ in 0..100 {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
        }
        let body: &[u8] = b"{\"app\": {\"name\": \"\xff\xfe\"}}";
        let mut stream = reader.into_inner();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(body);
    });
    let (code, _, err) = hab(&["status", &format!("http://127.0.0.1:{port}/api")]);
    assert_eq!(code, EXIT_FAILED, "{err}");
    assert!(err.contains("unexpected answer"), "{err}");
    server.join().unwrap();

    for bad in [
        "http://127.0.0.1:99999/api",
        "http://exa mple/api",
        "http://[::1/api",
        "http://127.0.0.1:80\u{7f}/api",
    ] {
        let (code, _, err) = hab(&["status", bad]);
        assert_eq!(code, EXIT_FAILED, "{bad}: {err}");
        assert!(!err.contains("unreachable"), "{bad}: {err}");
    }
}

/// Characters that must not reach a terminal: C0 but newline, DEL, C1,
/// bidirectional overrides.
fn has_terminal_control(s: &str) -> bool {
    s.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

#[test]
fn names_cannot_drive_the_terminal() {
    // OSC (retitle), CSI (clear), a C1 CSI, DEL, a bidi override, a
    // newline and a tab, in an upstream name, a server, a name, a policy
    // and a state, as JSON escapes (as the API writes them) and raw.
    let evil = r"\u001b]0;pwned\u0007\u001b[2J\u009b31m\u007f\u202e\n\tx";
    let answer = format!(
        r#"{{"up{evil}": {{"name": "up{evil}", "policy": "p{evil}", "generation": 1,
            "peers": [{{"id": 0, "server": "127.0.0.1:1{evil}", "name": "n{evil}",
                        "state": "s{evil}", "weight": 1, "active": 0, "max_conns": 0}},
                      {{"id": 1, "server": "127.0.0.1:2", "name": "127.0.0.1:2",
                        "state": "up", "weight": 1, "active": 0, "max_conns": 0}}]}}}}"#
    );
    let error =
        format!(r#"{{"error": {{"status": 404, "code": "NotFound", "text": "no {evil}"}}}}"#);
    let (url, _rx) = fake_api(vec![
        (200, answer.clone()),
        (200, answer.clone()),
        (200, answer.clone()),
        (200, answer.clone()),
        (404, error),
    ]);
    let mut outputs = Vec::new();
    let (code, out, err) = hab(&["status", &url]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains(r"up\x1b]0;pwned\x07\x1b[2J\u{9b}31m\x7f\u{202e}\x0a\x09x"),
        "{out}"
    );
    outputs.push((out, err));
    let (code, out, err) = hab(&["status", "--json", &url]);
    assert_eq!(code, EXIT_OK, "{err}");
    // still the API's answer, read back
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        got,
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()
    );
    outputs.push((out, err));
    for terminal in [false, true] {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = main_to(
            ["hab", "top", &url, "--iterations", "1"],
            &mut out,
            &mut err,
            terminal,
        );
        assert_eq!(code, EXIT_OK);
        let mut out = String::from_utf8(out).unwrap();
        if terminal {
            // the frame's own clear-screen, and nothing else
            out = out.strip_prefix(top::CLEAR).unwrap().to_owned();
        }
        assert!(
            out.contains(r"n\x1b]0;pwned") || out.contains(r"127.0.0.1:1\x1b"),
            "{out}"
        );
        outputs.push((out, String::from_utf8(err).unwrap()));
    }
    let (code, out, err) = hab(&["drain", &url, "up", "0"]);
    assert_eq!(code, EXIT_FAILED, "{err}");
    assert!(err.contains(r"no \x1b]0;pwned"), "{err}");
    outputs.push((out, err));
    for (out, err) in outputs {
        assert!(!has_terminal_control(&out), "{out:?}");
        assert!(!has_terminal_control(&err), "{err:?}");
    }
}

/// The whole answer for an upstream of `n` servers with every statistic,
/// as the API writes it (about 360 bytes a server).
fn large_answer(n: u32) -> String {
    let mut s = String::from(
        r#"{"big": {"name": "big", "policy": "round_robin", "generation": 1, "peers": ["#,
    );
    for id in 0..n {
        if id > 0 {
            s.push(',');
        }
        let (a, b) = (id / 250, id % 250);
        s.push_str(&format!(
            r#"{{"id": {id}, "server": "10.1.{a}.{b}:8080", "name": "10.1.{a}.{b}:8080", "backup": false, "weight": 1, "configured_weight": 1, "state": "up", "active": 0, "max_conns": 0, "down": false, "drain": false, "requests": {id}, "responses": {{"1xx": 0, "2xx": {id}, "3xx": 0, "4xx": 0, "5xx": 0, "total": {id}}}, "fails": 0, "unavail": 0, "downtime": 0, "header_time": 1.5, "response_time": 2.5, "sent": 123456, "received": 654321}}"#
        ));
    }
    s.push_str("]}}");
    s
}

#[test]
fn status_and_top_read_a_100000_server_upstream() {
    // 100,000 servers with every statistic: about 36 MB, beyond ureq's
    // default 10 MB limit, which made hab refuse the answer.
    let answer = large_answer(100_000);
    assert!(answer.len() > 30 << 20, "{}", answer.len());
    let (url, rx) = fake_api(vec![(200, answer.clone()), (200, answer)]);
    let (code, out, err) = hab(&["status", &url]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains(":8080")).count(), 100_000);
    assert!(
        out.contains("99999  10.1.399.249:8080"),
        "{}",
        &out[out.len() - 300..]
    );
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(seen.path.contains("?fields="), "{}", seen.path);
    let (code, out, err) = hab(&["top", &url, "--iterations", "1"]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains(":8080")).count(), 100_000);
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    left
}

#[test]
fn render_the_seed_file_and_the_short_one() {
    // The original design's files, unchanged, through the command.
    let dir = scratch("render-seed");
    let yaml = dir.join("core-config.yaml");
    std::fs::write(&yaml, config::tests::SEED).unwrap();
    let y = yaml.to_str().unwrap();
    let (code, out, err) = hab(&["render", y]);
    assert_eq!(code, EXIT_OK, "{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("no {l:?} in:\n{out}"))
    };
    // Each listener's default server proxies to its own backend.
    assert_eq!(
        lines[at("listen 80 default_server;") + 3],
        "proxy_pass http://http-backend;"
    );
    assert_eq!(
        lines[at("listen 443 ssl default_server;") + 3..][..3],
        [
            "proxy_pass https://https-backend;",
            "proxy_ssl_server_name on;",
            "proxy_ssl_name server2.example.com;"
        ]
    );
    assert_eq!(
        lines[at("upstream http-backend {") + 2],
        "server server1.example.com:80 max_conns=1024;"
    );
    assert_eq!(
        lines[at("upstream https-backend {") + 2],
        "server server2.example.com:443 max_conns=1024;"
    );

    // --snippet, and -o into a conf.d directory: the http-level content.
    let (code, snippet, err) = hab(&["render", y, "--snippet"]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(!snippet.contains("load_module") && snippet.contains("upstream https-backend {"));
    let confd = dir.join("conf.d");
    std::fs::create_dir(&confd).unwrap();
    let out_file = confd.join("ha.conf");
    std::fs::write(
        &yaml,
        config::tests::SEED.replace("reload: true", "reload: false"),
    )
    .unwrap();
    let (code, _, err) = hab(&["render", y, "-o", out_file.to_str().unwrap()]);
    assert_eq!(code, EXIT_OK, "{err}");
    let written = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        !written.contains("load_module") && !written.contains("events {"),
        "{written}"
    );
    assert!(
        written.starts_with("# Generated by `hab render`"),
        "{written}"
    );
    // A main-context setting cannot go into a snippet.
    std::fs::write(&yaml, format!("pid: /run/x.pid\n{}", config::tests::SEED)).unwrap();
    let (code, _, err) = hab(&["render", y, "--snippet"]);
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("pid: set in nginx's main context"), "{err}");

    // The short config.yaml: one backend.
    let short = dir.join("config.yaml");
    std::fs::write(&short, config::tests::SHORT).unwrap();
    let (code, out, err) = hab(&["render", short.to_str().unwrap()]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(
        out.contains("upstream backend {") && out.contains("proxy_pass http://backend;"),
        "{out}"
    );

    // A misspelt key: file, line and column.
    std::fs::write(
        &yaml,
        config::tests::SEED.replacen("  connections", "  conections", 1),
    )
    .unwrap();
    let (code, out, err) = hab(&["render", y]);
    assert_eq!((code, out.as_str()), (EXIT_FAILED, ""));
    assert!(
        err.starts_with(&format!(
            "hab: {y}: line 7 column 3: unknown field `conections`"
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snippet_reload_tests_the_main_config_with_the_new_snippet_in_place() {
    // A stand-in "nginx" records its arguments; at -t it keeps the main
    // configuration it was given and the snippet that one includes, as
    // they were then; $dir/fail makes -t fail.
    let dir = scratch("reload-snippet");
    let etc = dir.join("etc");
    let confd = etc.join("conf.d");
    std::fs::create_dir_all(&confd).unwrap();
    let log = dir.join("calls");
    let seen = dir.join("seen-main");
    let seen_snippet = dir.join("seen-snippet");
    let fail = dir.join("fail");
    let fake = dir.join("nginx");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> {log}\n\
             n=0; for a; do [ \"$n\" = 1 ] && conf=$a; n=0; [ \"$a\" = -c ] && n=1; done\n\
             case \"$*\" in *-t*)\n\
               cat \"$conf\" > {seen}\n\
               f=$(grep -o '[^\"]*/\\.ha\\.conf\\.hab-[^\"]*' \"$conf\"); cat \"$f\" > {seen_snippet}\n\
               [ -e {fail} ] && {{ echo 'nginx: [emerg] a duplicate default server' >&2; exit 1; }};;\n\
             esac\nexit 0\n",
            log = log.display(),
            seen = seen.display(),
            seen_snippet = seen_snippet.display(),
            fail = fail.display(),
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&fake, perm).unwrap();
    let main = etc.join("nginx.conf");
    let main_text =
        "events {}\nhttp {\n    include /nonexistent/mime.types;\n    include conf.d/*.conf;\n}\n";
    std::fs::write(&main, main_text).unwrap();
    std::fs::write(confd.join("default.conf"), "# another site\n").unwrap();
    let file = confd.join("ha.conf");
    std::fs::write(&file, "# the configuration in force\n").unwrap();
    let yaml = dir.join("core-config.yaml");
    std::fs::write(&yaml, config::tests::SEED).unwrap();
    let args = |extra: &[&str]| -> (u8, String, String) {
        let mut a = vec![
            "render",
            yaml.to_str().unwrap(),
            "-o",
            file.to_str().unwrap(),
            "--main-conf",
            main.to_str().unwrap(),
            "--nginx",
            fake.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        hab(&a)
    };

    // A failing nginx -t: FILE as it was, no temporary file anywhere, no
    // reload, nginx's words and a non-zero exit.
    std::fs::write(&fail, "").unwrap();
    let (code, out, err) = args(&[]);
    assert_eq!(code, EXIT_FAILED, "{out}");
    assert!(err.contains("[emerg] a duplicate default server"), "{err}");
    assert!(err.contains("ha.conf is unchanged"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "# the configuration in force\n"
    );
    assert_eq!(listing(&confd), ["default.conf", "ha.conf"]);
    assert_eq!(listing(&etc), ["conf.d", "nginx.conf"]);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls.lines().count(), 1, "{calls}");
    // What nginx tested: the main configuration, beside the real one, with
    // the new snippet where the glob reads ha.conf.
    let e = std::fs::canonicalize(&etc).unwrap();
    let e = e.display();
    assert!(
        calls.starts_with(&format!("-c {}/.nginx.conf.hab-", etc.display()))
            && calls.trim_end().ends_with(" -t -q"),
        "{calls}"
    );
    let tested = std::fs::read_to_string(&seen).unwrap();
    let want_prefix = format!(
        "events {{}}\nhttp {{\n    include /nonexistent/mime.types;\n    \
         include \"{e}/conf.d/default.conf\"; include \"{e}/conf.d/.ha.conf.hab-"
    );
    assert!(tested.starts_with(&want_prefix), "{tested}");
    assert!(tested.ends_with(".tmp\";\n}\n"), "{tested}");
    let tested_snippet = std::fs::read_to_string(&seen_snippet).unwrap();
    assert!(
        tested_snippet.contains("proxy_pass https://https-backend;"),
        "{tested_snippet}"
    );
    assert!(!tested_snippet.contains("load_module"), "{tested_snippet}");

    // A passing one: FILE replaced, then nginx reloads its own nginx.conf.
    std::fs::remove_file(&fail).unwrap();
    std::fs::remove_file(&log).unwrap();
    let (code, out, err) = args(&["--snippet"]);
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.contains("nginx reloaded"), "{out}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, std::fs::read_to_string(&seen_snippet).unwrap());
    let calls = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    assert_eq!(lines[1], format!("-c {} -s reload", main.display()));
    assert_eq!(listing(&confd), ["default.conf", "ha.conf"]);
    assert_eq!(listing(&etc), ["conf.d", "nginx.conf"]);
    assert_eq!(std::fs::read_to_string(&main).unwrap(), main_text);

    // A main configuration that does not include FILE: refused before
    // nginx runs (its test would pass without reading the snippet).
    std::fs::remove_file(&log).unwrap();
    std::fs::write(&main, "events {}\nhttp { include sites/*; }\n").unwrap();
    std::fs::write(&file, "# the configuration in force\n").unwrap();
    let (code, _, err) = args(&[]);
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("has no include that reads"), "{err}");
    assert!(!log.exists());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "# the configuration in force\n"
    );
    assert_eq!(listing(&confd), ["default.conf", "ha.conf"]);
    assert_eq!(listing(&etc), ["conf.d", "nginx.conf"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A GET to 127.0.0.1:`port`; the status code, or `None` when nothing
/// answered within 2 s.
fn status_of(port: u16) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut head = String::new();
    BufReader::new(s).read_line(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn snippet_reload_against_real_nginx() {
    // Real nginx, a Debian-like layout: nginx.conf includes conf.d/*.conf.
    // A snippet that clashes with another site there fails nginx -t and is
    // never put in place; one that fits replaces it and is served after
    // the reload.
    use hab_testkit::nginx::{module_so, nginx_bin};
    use hab_testkit::proc::{signal, wait_until};
    if !hab_testkit::nginx::nginx_or_skip() {
        return;
    }
    let dir = scratch("reload-real");
    let confd = dir.join("conf.d");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(&confd).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let other = closed_port();
    let main = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &main,
        format!(
            "load_module {};\nworker_processes 2;\npid {d}/nginx.pid;\n\
             error_log {d}/logs/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n    access_log off;\n    include conf.d/*.conf;\n}}\n",
            module_so().display()
        ),
    )
    .unwrap();
    // Another site: default_server on our port.
    let site = confd.join("default.conf");
    std::fs::write(
        &site,
        format!("server {{ listen 127.0.0.1:{port} default_server; return 204; }}\n"),
    )
    .unwrap();
    let yaml = dir.join("ha.yaml");
    std::fs::write(
        &yaml,
        format!(
            "reload: true\nlisten: {{ http: \"127.0.0.1:{port}\" }}\n\
             web: {{ servers: [\"127.0.0.1:{}\"], connections: 8 }}\n",
            closed_port()
        ),
    )
    .unwrap();
    let file = confd.join("ha.conf");
    let nginx = nginx_bin();
    let render = || {
        hab(&[
            "render",
            yaml.to_str().unwrap(),
            "-o",
            file.to_str().unwrap(),
            "--main-conf",
            main.to_str().unwrap(),
            "--nginx",
            nginx.to_str().unwrap(),
            "-p",
            dir.to_str().unwrap(),
        ])
    };
    /// Stops the nginx of `pid_file` (QUIT) however the test ends.
    struct Stop(std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let pid = std::fs::read_to_string(&self.0).unwrap_or_default();
            if let Ok(pid) = pid.trim().parse::<i32>() {
                signal(pid, libc::SIGQUIT);
                wait_until(Duration::from_secs(10), || !self.0.exists());
            }
        }
    }
    let pid_file = dir.join("nginx.pid");
    let stop = Stop(pid_file.clone());
    let run = std::process::Command::new(&nginx)
        .args(["-p", dir.to_str().unwrap(), "-c", main.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(run.success());
    assert!(wait_until(Duration::from_secs(10), || pid_file.exists()
        && status_of(port) == Some(204)));

    let (code, _, err) = render();
    assert_eq!(code, EXIT_FAILED);
    assert!(err.contains("a duplicate default server"), "{err}");
    assert!(err.contains("ha.conf is unchanged"), "{err}");
    assert_eq!(listing(&confd), ["default.conf"]);
    let temps: Vec<String> = listing(&dir)
        .into_iter()
        .filter(|n| n.contains(".hab-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    assert_eq!(status_of(port), Some(204));

    // The other site moves away: the snippet is tested, put in place and
    // served (502: its one server is closed).
    std::fs::write(
        &site,
        format!("server {{ listen 127.0.0.1:{other}; return 204; }}\n"),
    )
    .unwrap();
    let (code, out, err) = render();
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.contains("nginx reloaded"), "{out}");
    assert_eq!(listing(&confd), ["default.conf", "ha.conf"]);
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("max_conns=8;"));
    assert!(
        wait_until(Duration::from_secs(10), || status_of(port) == Some(502)),
        "{:?}",
        status_of(port)
    );

    drop(stop);
    assert!(!pid_file.exists(), "nginx did not stop");
    std::fs::remove_dir_all(&dir).unwrap();
}
