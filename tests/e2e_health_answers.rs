//! End-to-end: health check verdicts on malformed and unusual answers,
//! through real nginx with 4 workers against raw TCP servers on 127.0.0.1
//! that each send one fixed answer: no verdict before the whole head (a
//! strict status line and every header line), a malformed head fails the
//! check, and with `body=` the body is read up to its Content-Length, so a
//! server that keeps the connection open after a complete answer passes;
//! a chunked one up to its last chunk (matched with its framing, so
//! `heal` and `thy` in two chunks do not match `healthy`). The API's
//! `last_reason` says why, as the log does.
//!
//! Time bounds are derived from the configuration (interval 1 s, timeout
//! 1 s, fails=1) with a wide slack for a loaded machine: a wrong verdict
//! shows as the wrong state, not as a slow one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::api::api_peer;
use hab_testkit::nginx::{nginx_or_skip, serial, stock_mode, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;
use serde_json::Value;

/// How a raw server ends a connection after its answer.
#[derive(Clone, Copy)]
enum End {
    /// FIN.
    Close,
    /// RST.
    Reset,
    /// Keeps it open, answering each request the same way, until the
    /// checker closes it (or 10 s without a request).
    KeepOpen,
}

/// A server on 127.0.0.1 that reads a request head and sends `answer`,
/// for every connection, until dropped (or 120 s).
struct Raw {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Raw {
    fn start(answer: &'static [u8], end: End) -> Raw {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                match l.accept() {
                    Ok((c, _)) => {
                        thread::spawn(move || serve(c, answer, end));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Raw { addr, stop }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers `answer` to a request head; `KeepOpen`: to each one that comes
/// on the connection (checks keep their connection after an answer read
/// to its end), until the checker closes it.
fn serve(mut c: TcpStream, answer: &[u8], end: End) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // At most 100 requests on one connection (100 s of checks).
    for _ in 0..100 {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
            match c.read(&mut buf) {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        head.clear();
        if c.write_all(answer).is_err() {
            return;
        }
        match end {
            End::Close => return,
            End::Reset => return hab_testkit::backend::reset(&c),
            End::KeepOpen => {}
        }
    }
}

fn peer(port: u16, upstream: &str, addr: &str) -> Value {
    api_peer(port, upstream, addr)
}

#[test]
fn malformed_answers_fail_the_check_and_a_kept_open_complete_answer_passes() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    // (upstream, answer, end, expected verdict: None = passes, Some(why))
    let cases: Vec<(&str, &'static [u8], End, Option<&str>)> = vec![
        // status checks only (no body=): the head decides
        (
            "plain",
            b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n",
            End::KeepOpen,
            None,
        ),
        ("plain", b"HTTP/1.0 204 \r\n\r\n", End::Close, None),
        ("plain", b"HTTP/1.1 200 OK\nServer: x\n\n", End::Close, None),
        (
            "plain",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            End::Close,
            Some("invalid status line"),
        ),
        (
            "plain",
            b"HTTP/1.1 200 O\0K\r\n\r\n",
            End::Close,
            Some("invalid status line"),
        ),
        (
            "plain",
            b"HTTP/1.1\x00200 OK\r\n\r\n",
            End::Close,
            Some("invalid status line"),
        ),
        (
            "plain",
            b"HTTP/2 200 OK\r\n\r\n",
            End::Close,
            Some("invalid status line"),
        ),
        (
            "plain",
            b"HTTP/1.1 200 OK\r\n",
            End::Reset,
            Some("recv() failed"),
        ),
        (
            "plain",
            b"HTTP/1.1 200 OK\r\nServer: x\r\n",
            End::Close,
            Some("incomplete header"),
        ),
        (
            "plain",
            b"HTTP/1.1 200 OK\r\nX\0: y\r\n\r\n",
            End::Close,
            Some("invalid header"),
        ),
        (
            "plain",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            End::Close,
            Some("invalid header"),
        ),
        // body=healthy: read up to Content-Length, else to eof
        (
            "app",
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nhealthy\n",
            End::KeepOpen,
            None,
        ),
        (
            "app",
            b"HTTP/1.1 200 OK\r\ncontent-length:8\r\n\r\nhealthy\n",
            End::Reset,
            None,
        ),
        ("app", b"HTTP/1.1 200 OK\r\n\r\nhealthy\n", End::Close, None),
        // chunked: read to the last chunk, matched with its framing
        (
            "app",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;x=y\r\nheal\r\n4\r\nthy\n\r\n0\r\nX-T: 1\r\n\r\n",
            End::KeepOpen,
            Some("body does not match"),
        ),
        (
            "app",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              8\r\nhealthy\n\r\n0\r\n\r\n",
            End::KeepOpen,
            None,
        ),
        (
            "app",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nheal",
            End::Close,
            Some("incomplete body"),
        ),
        (
            "app",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhealthy\n",
            End::KeepOpen,
            Some("invalid chunked body"),
        ),
        (
            "app",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokhealthy",
            End::KeepOpen,
            Some("body does not match"),
        ),
        (
            "app",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhealthy\n",
            End::Close,
            Some("incomplete body"),
        ),
        (
            "app",
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Length: 9\r\n\r\nhealthy\n",
            End::Close,
            Some("invalid Content-Length"),
        ),
    ];
    let raws: Vec<Raw> = cases.iter().map(|c| Raw::start(c.1, c.2)).collect();
    let lines = |upstream: &str| -> String {
        cases
            .iter()
            .zip(&raws)
            .filter(|(c, _)| c.0 == upstream)
            .map(|(_, r)| format!("        server {};\n", r.addr))
            .collect()
    };
    let port = free_port();
    let conf = format!(
        "    upstream plain {{
        ha_balance round_robin;
        ha_check interval=1s timeout=1s fails=1 passes=1 uri=/healthz;
{}    }}
    upstream app {{
        ha_balance round_robin;
        ha_check interval=1s timeout=1s fails=1 passes=1 uri=/healthz body=healthy;
{}    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
        location /plain/ {{ proxy_pass http://plain; }}
        location / {{ proxy_pass http://app; }}
    }}
",
        lines("plain"),
        lines("app")
    );
    let ngx = Nginx::start(&conf, WORKERS);

    // Every failing case is unhealthy within an interval and a timeout
    // (plus a wide slack); then four more intervals for the others.
    let bound = Duration::from_secs(2 + 8);
    for (c, r) in cases.iter().zip(&raws) {
        if c.3.is_some() {
            let ok = wait_until(bound, || peer(port, c.0, &r.addr)["state"] == "unhealthy");
            assert!(
                ok,
                "{:?}: not unhealthy within {bound:?}: {}",
                String::from_utf8_lossy(c.1),
                peer(port, c.0, &r.addr)
            );
        }
    }
    let passed = |c: &(&str, &[u8], End, Option<&str>), r: &Raw| {
        let p = peer(port, c.0, &r.addr);
        p["health_checks"]["checks"].as_u64().unwrap_or(0)
    };
    let checked = wait_until(Duration::from_secs(15), || {
        cases
            .iter()
            .zip(&raws)
            .all(|(c, r)| c.3.is_some() || passed(c, r) >= 4)
    });
    assert!(checked, "the passing servers were not checked 4 times");
    for (c, r) in cases.iter().zip(&raws) {
        if c.3.is_none() {
            let p = peer(port, c.0, &r.addr);
            assert_eq!(p["state"], "up", "{:?}: {p}", String::from_utf8_lossy(c.1));
            assert_eq!(
                p["health_checks"]["fails"],
                0,
                "{:?}: {p}",
                String::from_utf8_lossy(c.1)
            );
        }
    }
    // The API tells the same reason (a reset: "connection reset").
    for (c, r) in cases.iter().zip(&raws) {
        if let Some(why) = c.3 {
            let want = if why == "recv() failed" {
                "connection reset"
            } else {
                why
            };
            let h = &peer(port, c.0, &r.addr)["health_checks"];
            assert_eq!(
                h["last_reason"],
                want,
                "{:?}: {h}",
                String::from_utf8_lossy(c.1)
            );
            assert_eq!(h["last_result"], "failed");
        }
    }
    let log = ngx.error_log();
    for (c, r) in cases.iter().zip(&raws) {
        if let Some(why) = c.3 {
            let line = format!("upstream server {} of \"{}\" is unhealthy", r.addr, c.0);
            let l = log
                .lines()
                .find(|l| l.contains(&line))
                .unwrap_or_else(|| panic!("no {line:?} in\n{log}"));
            assert!(
                l.contains(why),
                "{:?}: want {why:?}: {l}",
                String::from_utf8_lossy(c.1)
            );
        }
    }
    assert!(!log.contains("[alert]") && !log.contains("[crit]"), "{log}");
}
